"""Column names of batches and module outputs, written once (RLlib's ``core/columns.py``).

Module forward passes return dicts keyed by these names, EnvRunners keep the extra outputs
under them, and episode traces use the episode columns as JSON keys (the strings are part of
the trace format and must not change).
"""

from __future__ import annotations

__all__ = [
    "ACTIONS",
    "ACTION_DIST_INPUTS",
    "ACTION_LOGP",
    "AGENT_ID",
    "ENV_STEP",
    "EPISODE_LENGTH",
    "EPISODE_RETURN",
    "OBS",
    "POLICY_ID",
    "PREV_ACTIONS",
    "PREV_REWARDS",
    "Q_VALUES",
    "REWARDS",
    "STATE_IN_C",
    "STATE_IN_H",
    "STATE_OUT_C",
    "STATE_OUT_H",
    "TERMINATEDS",
    "TRUNCATEDS",
    "VF_PREDS",
]

# Module outputs.
ACTIONS = "actions"
ACTION_DIST_INPUTS = "action_dist_inputs"
ACTION_LOGP = "action_logp"
VF_PREDS = "vf_preds"
Q_VALUES = "q_values"

# A recurrent module's state (an LSTM's hidden and cell vectors): what a step is fed, and
# what it gives back for the next step.
STATE_IN_H = "state_in_h"
STATE_IN_C = "state_in_c"
STATE_OUT_H = "state_out_h"
STATE_OUT_C = "state_out_c"

# What a recurrent module may also read at each step (``lstm_use_prev_action`` /
# ``lstm_use_prev_reward``): the action taken and the reward received at the step before, zeros
# at an episode's first step.
PREV_ACTIONS = "prev_actions"
PREV_REWARDS = "prev_rewards"

# Episode columns (trace JSON keys).
OBS = "obs"
REWARDS = "rewards"
TERMINATEDS = "terminated"
TRUNCATEDS = "truncated"
EPISODE_RETURN = "return"
EPISODE_LENGTH = "length"
# Multi-agent episode traces: a row per agent step, saying whose step, under which policy, at
# which env step of the episode.
AGENT_ID = "agent_id"
POLICY_ID = "policy_id"
ENV_STEP = "env_step"
