"""Enhancing frames with a trained generator: on one machine and as a Ray Data job."""
