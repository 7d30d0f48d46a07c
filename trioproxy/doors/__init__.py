"""Front doors: one module per client wire protocol, each translating to and from the routing pipeline."""
