"""``mnemo``: the command line for people (HTTP to the API) and the local runner (`mnemo up`)."""
