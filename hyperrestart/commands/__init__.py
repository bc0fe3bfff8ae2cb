"""The command line: one module per verb; each only parses its options and calls the library."""
