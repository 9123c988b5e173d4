"""Hessian and curvature tools (issue #4)."""
