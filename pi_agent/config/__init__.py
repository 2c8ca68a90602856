"""Configuration: `/etc/pi-agent.yaml` -> validated frozen dataclasses, and the API key.

Runtime code imports from here; the modules behind it are the schema engine (`schema`, whose
value kinds only the sections and the tests use), the sections (`loader`, `hardware`, `tools`,
`wakeword`) and the key lookup (`secrets`).
"""

from __future__ import annotations

from pi_agent.config.hardware import Apa102Config, ButtonConfig, ControlConfig, LedsConfig
from pi_agent.config.loader import (
    DEFAULT_AUDIO,
    DEFAULT_CONFIG_PATH,
    DEFAULT_SERVER_URL,
    SCHEMA,
    AgentConfig,
    AudioConfig,
    Config,
    ConversationConfig,
    EarconsConfig,
    LoggingConfig,
    OverridesConfig,
    default_config,
    load_config,
    parse_config,
)
from pi_agent.config.schema import show
from pi_agent.config.secrets import (
    API_KEY_ENV,
    CREDENTIAL_NAME,
    KEY_FILE_FIX,
    Secret,
    resolve_api_key,
)
from pi_agent.config.tools import (
    BUILTIN_NAMES,
    CommandTool,
    ContextConfig,
    ParamSpec,
    ParamValue,
    PeriodicContext,
    ToolsConfig,
    expand_template,
    matches_type,
    template_fields,
)
from pi_agent.config.wakeword import DEFAULT_REFRACTORY_S, WAKEWORD_MODELS, WakewordConfig

__all__ = [
    "API_KEY_ENV",
    "BUILTIN_NAMES",
    "CREDENTIAL_NAME",
    "DEFAULT_AUDIO",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_REFRACTORY_S",
    "DEFAULT_SERVER_URL",
    "KEY_FILE_FIX",
    "SCHEMA",
    "WAKEWORD_MODELS",
    "AgentConfig",
    "Apa102Config",
    "AudioConfig",
    "ButtonConfig",
    "CommandTool",
    "Config",
    "ContextConfig",
    "ControlConfig",
    "ConversationConfig",
    "EarconsConfig",
    "LedsConfig",
    "LoggingConfig",
    "OverridesConfig",
    "ParamSpec",
    "ParamValue",
    "PeriodicContext",
    "Secret",
    "ToolsConfig",
    "WakewordConfig",
    "default_config",
    "expand_template",
    "load_config",
    "matches_type",
    "parse_config",
    "resolve_api_key",
    "show",
    "template_fields",
]
