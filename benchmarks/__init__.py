"""Side-by-side benchmarks of serve-app and its peers: `python -m benchmarks.run [--quick]`."""
