"""Generated stubs of the xmargin.v1 gRPC contract (do not edit; see generate_stubs.py)."""
