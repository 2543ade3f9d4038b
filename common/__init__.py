"""What every loomlm package may import and that imports nothing of loomlm: the request-error
family and the cache locations."""
