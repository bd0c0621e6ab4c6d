from sfs.cli import main

# The name in usage lines, and what shell completion keys on (_SFS_COMPLETE), is the
# command's, not "python -m sfs".
main(prog_name="sfs")
