"""A character n-gram language identifier served under the model container contract."""
