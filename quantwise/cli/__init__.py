"""The `quantwise` command: thin wrappers that parse options, call the library and print."""
