"""Console scripts. Each module parses arguments and calls one library function."""
