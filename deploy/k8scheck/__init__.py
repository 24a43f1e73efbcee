"""The checks of deploy/check_k8s.py, one module per kind of check."""
