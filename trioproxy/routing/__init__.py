"""The routing policy: which provider serves a request, adaptation, estimates, failover."""
