"""Offline stand-ins for the outside world, for the demo, the tests and the benchmarks: a fake
TMDB API (``tmdb_server`` over the deterministic catalog of ``tmdb_data``) and synthetic drone
fields with known ground truth (``drone_fields``). Not part of any job image."""
