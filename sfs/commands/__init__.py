"""The ``sfs`` commands, one module each (as pip's ``_internal/commands/``), with what
they share: options, the console and JSON UIs, prompts.  :mod:`sfs.cli` registers them.

Only what ``--help`` needs is imported at the top of these modules; everything heavy
(the app, aiortc, tqdm...) inside the function that uses it.
"""
