"""READ layer: wraps a feed-forward module and adds GELU(RNN(O W_down)) W_up to its output O (eq. 5).

Without a recurrent cell (``rnn_type="none"``) the same layer adds GELU(O W_down) W_up: the Houlsby adapter. An
adapter of that kind has no entry in ``pvread_rnn``, so no RNN parameter is created, trained or saved.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ...video import frames_to_time_major_tokens, resolve_num_frames, time_major_tokens_to_frames
from .._wrapping import ForwardsToBaseLayer
from .config import ReadConfig

_RNN_CLASSES = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


def output_features(module: nn.Module) -> int:
    """Width d of a feed-forward module's output (its last Linear layer's out_features)."""
    if isinstance(module, nn.Linear):
        return module.out_features
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"READ targets feed-forward modules whose output width it can read from a Linear layer; "
            f"got {type(module).__name__}, which has none"
        )
    return linears[-1].out_features


class ReadLayer(ForwardsToBaseLayer, nn.Module, BaseTunerLayer):
    """A target feed-forward module plus one READ bottleneck per adapter, applied to the module's output."""

    adapter_prefix = "pvread_"
    adapter_layer_names = ("pvread_down", "pvread_rnn", "pvread_up")
    other_param_names = ("pvread_dropout", "pvread_axis", "pvread_num_frames")

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: ReadConfig) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.pvread_down = nn.ModuleDict()
        self.pvread_rnn = nn.ModuleDict()
        self.pvread_up = nn.ModuleDict()
        self.pvread_dropout = nn.ModuleDict()
        self.pvread_axis: dict[str, str] = {}
        self.pvread_num_frames: dict[str, int | None] = {}
        self._disable_adapters = False
        self.merged_adapters = []
        self.features = output_features(base_layer)
        self.update_layer(adapter_name, config)

    def update_layer(self, adapter_name: str, config: ReadConfig) -> None:
        """Create (or re-create) the READ weights of ``adapter_name`` and make it the active adapter."""
        r = config.r
        self.pvread_down[adapter_name] = nn.Linear(self.features, r)
        if config.rnn_type in _RNN_CLASSES:
            self.pvread_rnn[adapter_name] = _RNN_CLASSES[config.rnn_type](r, r, batch_first=True)
        elif adapter_name in self.pvread_rnn:  # re-created without recurrence
            del self.pvread_rnn[adapter_name]
        self.pvread_up[adapter_name] = nn.Linear(r, self.features)
        self.pvread_dropout[adapter_name] = (
            nn.Dropout(config.read_dropout) if config.read_dropout else nn.Identity()
        )
        self.pvread_axis[adapter_name] = config.recurrence_axis
        self.pvread_num_frames[adapter_name] = config.num_frames
        self.reset_read_parameters(adapter_name, config.init_weights)
        reference = next(self.base_layer.parameters(), None)
        self._move_adapter_to_device_of_base_layer(
            adapter_name, None if reference is None else reference.device
        )
        self.set_adapter(self.active_adapters)

    @torch.no_grad()
    def reset_read_parameters(self, adapter_name: str, init_weights: bool | str) -> None:
        """Initialise READ so that the wrapped module's output is unchanged (see ``ReadConfig.init_weights``)."""
        down, up = self.pvread_down[adapter_name], self.pvread_up[adapter_name]
        nn.init.kaiming_normal_(down.weight)
        nn.init.zeros_(down.bias)
        rnn = self.pvread_rnn[adapter_name] if adapter_name in self.pvread_rnn else None
        if rnn is not None and init_weights == "paper":
            for p in rnn.parameters():
                nn.init.zeros_(p)
        elif rnn is not None:
            rnn.reset_parameters()
            for name, p in rnn.named_parameters():
                if name.startswith("bias"):
                    nn.init.zeros_(p)
        if init_weights is False:
            nn.init.normal_(up.weight, std=1.0 / math.sqrt(up.in_features))
        else:
            nn.init.zeros_(up.weight)
        nn.init.zeros_(up.bias)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise ValueError(
            "READ adapters cannot be merged into the base weights: the bottleneck (GELU, and the recurrence) is not a "
            "linear map of the weights. Keep the adapter unmerged (or use `unload()` to drop it)."
        )

    def unmerge(self) -> None:
        """Nothing is ever merged, so there is nothing to undo."""

    def read_delta(self, output: torch.Tensor, adapter_name: str) -> torch.Tensor:
        """GELU(RNN(dropout(O) W_down)) W_up for one adapter (no RNN for rnn_type='none'), in the adapter's dtype."""
        down = self.pvread_down[adapter_name]
        x = self._cast_input_dtype(output, down.weight.dtype)
        hidden = down(self.pvread_dropout[adapter_name](x))
        if adapter_name not in self.pvread_rnn:  # the Houlsby adapter: each token on its own
            recurrent = hidden
        elif self.pvread_axis[adapter_name] == "frames":
            if hidden.ndim != 3:
                raise ValueError(
                    f"READ with recurrence_axis='frames' expects the target's output as (B*T, N, D), got shape "
                    f"{tuple(output.shape)}"
                )
            num_frames = resolve_num_frames(self.pvread_num_frames[adapter_name])
            tokens = hidden.shape[1]
            sequences = frames_to_time_major_tokens(hidden, num_frames)
            recurrent, _ = self.pvread_rnn[adapter_name](sequences)
            recurrent = time_major_tokens_to_frames(recurrent, num_frames, tokens)
        else:
            if hidden.ndim == 2:
                recurrent, _ = self.pvread_rnn[adapter_name](hidden.unsqueeze(0))
                recurrent = recurrent.squeeze(0)
            else:
                recurrent, _ = self.pvread_rnn[adapter_name](hidden)
        return self.pvread_up[adapter_name](F.gelu(recurrent))

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        output = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters:
            return output
        result = output
        for adapter_name in self.active_adapters:
            if adapter_name not in self.pvread_down:
                continue
            result = result + self.read_delta(output, adapter_name).to(output.dtype)
        return result

    def __repr__(self) -> str:
        return "pvread." + super().__repr__()
