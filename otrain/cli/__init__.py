"""The ``otrain-*`` commands: thin wrappers that parse arguments and call the library.

Each module has ``main(argv=None) -> int``; known errors become one line on stderr
and a non-zero exit code, never a traceback.
"""
