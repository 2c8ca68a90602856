"""Link adapter: signed-URL flow against the simulator, error mapping, secrets never leak."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosedError

from pi_agent.adapters.audio.wavfile import write_wav
from pi_agent.adapters.link import (
    LinkSettings,
    conversation_url,
    open_link,
    redact_url,
    resolve_url,
    rest_base,
)
from pi_agent.config import Secret, default_config
from pi_agent.core.ending import EndKind
from pi_agent.errors import AuthError, LinkError
from pi_agent.once import run_talk
from pi_agent.simulator import Simulator, SimulatorOptions
from tests.helpers import run

T = TypeVar("T")
API_KEY = "sk_test_0123456789abcdef_SECRET"


def test_urls() -> None:
    assert (
        conversation_url("wss://api.elevenlabs.io", "agent 1")
        == "wss://api.elevenlabs.io/v1/convai/conversation?agent_id=agent+1"
    )
    assert conversation_url("ws://127.0.0.1:9", "a", "staging").endswith("&environment=staging")
    assert rest_base("wss://api.elevenlabs.io") == "https://api.elevenlabs.io"
    assert rest_base("ws://127.0.0.1:8765") == "http://127.0.0.1:8765"
    redacted = redact_url("wss://h/v1/convai/conversation?agent_id=a1&conversation_signature=TOKEN")
    assert "TOKEN" not in redacted
    assert "agent_id=a1" in redacted


def test_signed_url_flow_uses_a_fresh_token_per_conversation() -> None:
    async def main() -> None:
        options = SimulatorOptions(api_keys=frozenset({API_KEY}), ping_interval_s=0)
        async with Simulator(options) as sim:
            settings = LinkSettings(sim.url, "agent_1", api_key=Secret(API_KEY))
            first = await resolve_url(settings)
            second = await resolve_url(settings)
            assert first != second
            assert first.startswith(f"{sim.url}/v1/convai/conversation?agent_id=agent_1&")
            ws = await open_link(settings)
            await ws.close()

    run(main())


@pytest.mark.parametrize("key", ["wrong-key", ""])
def test_refused_key_is_an_auth_error_without_the_key(key: str) -> None:
    async def main() -> None:
        options = SimulatorOptions(api_keys=frozenset({API_KEY}), ping_interval_s=0)
        async with Simulator(options) as sim:
            with pytest.raises(AuthError) as info:
                await resolve_url(LinkSettings(sim.url, "agent_1", api_key=Secret(key or "x")))
        text = str(info.value)
        assert "HTTP 401" in text
        assert (key or "x") not in text.replace("xi-api-key", "")

    run(main())


def test_socket_without_token_is_refused_when_keys_are_required(tmp_path: Path) -> None:
    async def main() -> None:
        options = SimulatorOptions(api_keys=frozenset({API_KEY}), ping_interval_s=0)
        async with Simulator(options) as sim:
            ws = await open_link(LinkSettings(sim.url, "agent_1"))  # public path, no token
            with pytest.raises(ConnectionClosedError):
                async for _ in ws:
                    pass
            assert ws.close_code == 1008
            assert "authorize" in (ws.close_reason or "")

    run(main())


def test_connect_errors_are_clear() -> None:
    async def main() -> None:
        with pytest.raises(
            LinkError, match=re.escape("could not connect to ws://127.0.0.1:9: connection refused")
        ):
            await open_link(LinkSettings("ws://127.0.0.1:9", "a", connect_timeout_s=2))
        with pytest.raises(LinkError, match="the signed-URL call failed: connection refused"):
            await resolve_url(
                LinkSettings("ws://127.0.0.1:9", "a", api_key=Secret(API_KEY), connect_timeout_s=2)
            )

    run(main())


def test_conversation_with_key_leaks_neither_key_nor_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything logged at DEBUG, printed and returned during a private-agent conversation."""
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    key_file.chmod(0o600)
    mic = tmp_path / "mic.wav"
    t = np.arange(16000) / 16000
    write_wav(
        mic,
        np.concatenate(
            ((np.sin(2 * np.pi * 440 * t) * 9000).astype(np.int16), np.zeros(16000, np.int16))
        ),
        16000,
    )
    tokens: list[str] = []

    async def main() -> str:
        options = SimulatorOptions(api_keys=frozenset({API_KEY}), ping_interval_s=0.2)
        async with Simulator(options) as sim:
            original = sim.issue_token

            def spy(agent_id: str) -> str:
                token = original(agent_id)
                tokens.append(token)
                return token

            monkeypatch.setattr(sim, "issue_token", spy)
            cfg = default_config(
                "agent_1",
                sim.url,
                agent={"api_key_file": str(key_file)},
                audio={"backend": "file", "input_file": str(mic), "file_speed": 0},
            )
            out = io.StringIO()
            reason, conv = await run_talk(cfg, out=out)
            assert reason.kind is EndKind.COMPLETED, reason
            assert reason.policy.exit_code == 0
            return out.getvalue() + repr(cfg) + repr(conv.link) + str(reason)

    with caplog.at_level(logging.DEBUG):
        printed = run(main())
    assert tokens, "the simulator issued no token: the signed-URL flow was not used"
    everything = printed + caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert "signed URL obtained" in caplog.text  # debug logging did run
    assert API_KEY not in everything
    for token in tokens:
        assert token not in everything
