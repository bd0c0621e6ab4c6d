from sfs.cli import main

main()
