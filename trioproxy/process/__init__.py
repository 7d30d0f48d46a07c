"""Process control: the root nursery of one proxy process, `--workers N` on one socket,
`--daemon` and its pidfile, and `--demo`'s in-process emulators."""
