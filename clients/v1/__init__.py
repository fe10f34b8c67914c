"""Generated stubs of the xmargin.v1 gRPC contract (see generate_stubs.py)."""
