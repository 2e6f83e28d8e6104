"""The bundle: ``format`` (the contract: names, labels, manifest, image config,
sidecar and parts), ``reader`` (find, join, inspect, verify) and ``writer`` (the
single-pass docker-archive writer). Pack imports the writer, run the reader, and
both the format."""
