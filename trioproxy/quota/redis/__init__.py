"""The quota ledger shared through Redis: the client for `redis_url` (`client.py`), the
connection and its outages (`connection.py`), the store's clock (`clock.py`), the ledger script
(`ledger_script.py`) and the lanes that batch its operations (`lanes.py`), the store that holds
them together (`store.py`), the ledger on top of it (`ledger.py`), and the shares each process
books ahead (`shares.py`, `share_keeper.py`); and where the replicas' exchanges sit in Redis
(`client_figures.py`, `prompt_stream.py`)."""
