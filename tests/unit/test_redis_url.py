"""`sfs serve --redis URL`: which URLs are taken, and how logs and errors show them
(never with a user name, password or query)."""

from __future__ import annotations

import pytest

from sfs.signal.config import ServerConfig, redis_url_display


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@10.0.0.20:6379/2", "redis://10.0.0.20:6379/2"),
        ("redis://sfs:s3cret@redis.example.org", "redis://redis.example.org/0"),
        ("REDISS://sfs:s3cret@redis.example.org:6380/", "rediss://redis.example.org:6380/0"),
        ("redis://[::1]:6379/1?password=s3cret", "redis://[::1]:6379/1"),
        ("unix:///run/redis/redis.sock?password=s3cret", "unix:///run/redis/redis.sock"),
    ],
)
def test_urls_are_shown_without_credentials(url: str, shown: str) -> None:
    assert redis_url_display(url) == shown
    assert "s3cret" not in repr(ServerConfig(redis_url=url))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379",
        "127.0.0.1:6379",
        "redis+sentinel://:s3cret@host:26379/0/mymaster",
        "redis://:s3cret@/0",
        "redis://:s3cret@127.0.0.1:port/0",
        "redis://:s3cret@127.0.0.1:99999/0",
        "redis://:s3cret@127.0.0.1:6379/zero",
        "unix://",
    ],
)
def test_other_urls_are_refused_without_repeating_them(url: str) -> None:
    with pytest.raises(ValueError, match="--redis") as info:
        redis_url_display(url)
    assert "s3cret" not in str(info.value)
    with pytest.raises(ValueError, match="--redis"):
        ServerConfig(redis_url=url)


def test_the_ttl_has_a_floor() -> None:
    with pytest.raises(ValueError, match="--redis-ttl"):
        ServerConfig(redis_url="redis://127.0.0.1/0", redis_ttl_seconds=1.0)
