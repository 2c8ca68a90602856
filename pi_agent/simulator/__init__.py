"""Local Agents-compatible server (echo agent, scenarios) for the demo, tests and benchmarks."""

from pi_agent.errors import ScenarioError
from pi_agent.simulator.agent import AgentTurn, EchoAgent, EchoConfig
from pi_agent.simulator.cli import add_arguments, main, options_from_args, run_from_args
from pi_agent.simulator.records import ClientEvent, ConversationRecord, PingRecord, SentEvent
from pi_agent.simulator.scenario import (
    Close,
    Echo,
    Scenario,
    Send,
    SendAudio,
    SendMetadata,
    SendPing,
    SendRaw,
    Step,
    Wait,
    WaitFor,
    load_scenario,
)
from pi_agent.simulator.server import Simulator, SimulatorOptions, serve_forever
from pi_agent.simulator.thread import SimulatorThread

__all__ = [
    "AgentTurn",
    "ClientEvent",
    "Close",
    "ConversationRecord",
    "Echo",
    "EchoAgent",
    "EchoConfig",
    "PingRecord",
    "Scenario",
    "ScenarioError",
    "Send",
    "SendAudio",
    "SendMetadata",
    "SendPing",
    "SendRaw",
    "SentEvent",
    "Simulator",
    "SimulatorOptions",
    "SimulatorThread",
    "Step",
    "Wait",
    "WaitFor",
    "add_arguments",
    "load_scenario",
    "main",
    "options_from_args",
    "run_from_args",
    "serve_forever",
]
