"""Cluster-level checks that need no VM: histories recorded by lanes, checked whole."""
