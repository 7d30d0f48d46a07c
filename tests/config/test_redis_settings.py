"""redis_url's forms (server, TLS, unix socket, cluster, sentinel) and the TLS files, checked
when the settings load: one line naming the setting."""

from pathlib import Path

import pytest
import trustme

from support.settings import load, refusal
from trioproxy.config.redaction import redacted, secrets
from trioproxy.quota.redis.connection import redacted_url
from trioproxy.config.redis_target import RedisTarget, parse_redis_url


def settings(url: str, **extra: str) -> str:
    return f'quota_backend = "redis"\nredis_url = "{url}"\n' + "".join(f'{key} = "{value}"\n' for key, value in extra.items())


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("redis://:s3cret@10.0.0.5/2", RedisTarget("server", False, (("10.0.0.5", 6379),), db=2, password="s3cret")),
        ("rediss://app:p%40ss@redis.internal:6380/0", RedisTarget("server", True, (("redis.internal", 6380),), username="app", password="p@ss")),
        ("unix:///run/redis/redis.sock?db=3", RedisTarget("socket", False, socket="/run/redis/redis.sock", db=3)),
        ("redis+cluster://10.0.0.1:7000,10.0.0.2:7001", RedisTarget("cluster", False, (("10.0.0.1", 7000), ("10.0.0.2", 7001)))),
        ("rediss+sentinel://:pw@s1,s2:26380/quota/1",
         RedisTarget("sentinel", True, (("s1", 26379), ("s2", 26380)), db=1, password="pw", service="quota")),
        ("redis://:a/b?c#d@10.0.0.5:6380/1", RedisTarget("server", False, (("10.0.0.5", 6380),), db=1, password="a/b?c#d")),
    ],
)
def test_every_form_of_redis_url_loads(tmp_path: Path, url: str, target: RedisTarget) -> None:
    assert load(tmp_path, settings(url)).redis_url == url
    assert parse_redis_url(url) == target


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("memcached://10.0.0.1", "must start with one of redis://, rediss://, unix://, redis+cluster://"),
        ("redis://", "names no host"),
        ("unix://", "names no socket path"),
        ("redis://10.0.0.1:7000,10.0.0.2:7001", "names several hosts; for a cluster or sentinels use redis+cluster://"),
        ("redis+cluster://10.0.0.1:7000/1", "names a database other than 0; a Redis Cluster has only database 0"),
        ("redis+sentinel://10.0.0.1:26379", "names no service: redis+sentinel://host:port[,host:port]/service_name[/db]"),
        ("redis+sentinel://10.0.0.1:x/quota", "has a port that is not a number"),
        ("redis://10.0.0.1/zero", "names database 'zero'; a database is a number (e.g. /0)"),
        ("rediss://10.0.0.1/0?ssl_cert_reqs=none", "has query parameters other than db; TLS files go in redis_tls_ca"),
        ("redis://:pass?word@10.0.0.1/0?x=1", "has query parameters other than db; TLS files"),  # nothing of the password
        ("redis+sentinel://10.0.0.1/quota?sentinel_password=pw",
         "has query parameters other than db; TLS files go in redis_tls_ca, redis_tls_cert and redis_tls_key, "
         "the sentinels' own password in redis_sentinel_password"),
    ],
)
def test_a_redis_url_that_does_not_parse_is_refused_naming_it(tmp_path: Path, url: str, reason: str) -> None:
    assert refusal(tmp_path, settings(url)).startswith(f"redis_url: {reason}")


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    client = ca.issue_cert("trioproxy-client")
    files = {"ca": ca.cert_pem, "cert": client.cert_chain_pems[0], "key": client.private_key_pem,
             "other-key": trustme.CA().issue_cert("x").private_key_pem}
    for name, blob in files.items():
        blob.write_to_path(tmp_path / f"{name}.pem")
    (tmp_path / "not-pem.pem").write_text("hello\n")
    return {name: str(tmp_path / f"{name}.pem") for name in (*files, "not-pem")}


def test_tls_files_that_load_are_taken(tmp_path: Path, pem: dict[str, str]) -> None:
    config = load(tmp_path, settings("rediss://10.0.0.1/0", redis_tls_ca=pem["ca"], redis_tls_cert=pem["cert"], redis_tls_key=pem["key"]))
    assert (config.redis_tls_ca, config.redis_tls_cert, config.redis_tls_key) == (pem["ca"], pem["cert"], pem["key"])


@pytest.mark.parametrize(
    ("url", "files", "message"),
    [
        ("redis://10.0.0.1/0", {"redis_tls_ca": "ca"}, "redis_tls_ca: is only read with a TLS redis_url (rediss://"),
        ("rediss://10.0.0.1/0", {"redis_tls_ca": "missing"}, "redis_tls_ca: no such file"),
        ("rediss://10.0.0.1/0", {"redis_tls_ca": "not-pem"}, "redis_tls_ca: "),
        ("rediss://10.0.0.1/0", {"redis_tls_cert": "cert"}, "redis_tls_key: must be set too: a client certificate goes with its private key"),
        ("rediss://10.0.0.1/0", {"redis_tls_key": "key"}, "redis_tls_cert: must be set too"),
        ("rediss://10.0.0.1/0", {"redis_tls_cert": "cert", "redis_tls_key": "other-key"}, "redis_tls_cert: "),
        ("rediss+cluster://10.0.0.1:7000", {"redis_tls_cert": "not-pem", "redis_tls_key": "key"}, "redis_tls_cert: "),
    ],
)
def test_tls_files_that_cannot_serve_are_refused_naming_the_setting(
    tmp_path: Path, pem: dict[str, str], url: str, files: dict[str, str], message: str
) -> None:
    paths = {key: pem.get(name, str(tmp_path / f"{name}.pem")) for key, name in files.items()}
    assert refusal(tmp_path, settings(url, **paths)).startswith(message)


def test_the_sentinels_password_comes_from_its_own_setting_and_stays_secret(tmp_path: Path) -> None:
    url = "redis+sentinel://:data-pw@10.0.0.1,10.0.0.2/quota"
    from_file = load(tmp_path, settings(url, redis_sentinel_password="sentinel-pw"))
    from_env = load(tmp_path, settings(url), environ={"REDIS_SENTINEL_PASSWORD": "sentinel-pw"})
    assert from_file.redis_sentinel_password == from_env.redis_sentinel_password == "sentinel-pw"
    assert redacted(from_file)["redis_sentinel_password"] == "<set>"  # --check-config
    assert "sentinel-pw" not in repr(from_file)
    assert {"sentinel-pw", "data-pw"} <= set(secrets(from_file))  # the log filter hides both


@pytest.mark.parametrize("url", ["redis://10.0.0.1/0", "redis+cluster://10.0.0.1:7000", ""])
def test_a_sentinel_password_without_sentinels_is_refused_naming_it(tmp_path: Path, url: str) -> None:
    text = settings(url, redis_sentinel_password="pw") if url else 'redis_sentinel_password = "pw"\n'
    assert refusal(tmp_path, text).startswith(
        "redis_sentinel_password: is only read with a sentinel redis_url (redis+sentinel://, rediss+sentinel://)"
    )


def test_a_key_prefix_with_braces_is_refused(tmp_path: Path) -> None:
    assert refusal(tmp_path, 'redis_key_prefix = "app{1}:"\n').startswith(
        "redis_key_prefix: must not contain { or }: each key's {provider} is its Redis Cluster hash tag"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@10.0.0.5/2", "redis://:***@10.0.0.5/2"),
        ("rediss://app:a/b?c#d@redis.internal:6380/0", "rediss://app:***@redis.internal:6380/0"),
        ("redis+sentinel://:pw@s1,s2:26380/quota", "redis+sentinel://:***@s1,s2:26380/quota"),
        ("redis://10.0.0.5:6379/0", "redis://10.0.0.5:6379/0"),
    ],
)
def test_logs_and_status_show_the_redis_url_without_its_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
