"""Vendoring: pin the upstreams (vendor.lock), fetch them, apply patches/ and overlay/, verify, export, pack."""
