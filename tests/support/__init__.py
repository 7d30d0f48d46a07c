"""What tests share: clients, raw HTTP, fault servers, processes, Redis deployments.

Test modules import these, never each other (tests/codebase/test_layers.py checks it)."""
