"""Token choice never mixes devices: every tensor the sampler and the penalties create is placed on
the logits' device. On CPU a tensor made without a device happens to work; on CUDA it fails the
first seeded draw. This machine has no GPU, so the test watches the tensor factories instead: none
may be called inside token choice without naming a device (``torch.*_like`` and tensor methods
keep their input's device and are not factories)."""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from reason.core.engine.hf.penalties import penalise
from reason.core.engine.hf.sampler import sample_tokens

FACTORIES = {torch.tensor, torch.zeros, torch.ones, torch.empty, torch.full, torch.arange, torch.as_tensor,
             torch.randn, torch.rand}


class DevicelessFactories(TorchFunctionMode):
    """Records each tensor factory called without a ``device``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **kwargs)


def test_sampling_and_penalties_name_the_logits_device():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 300, generator=gen) * 2
    settings = [  # (temperature, top_k, top_p, min_p): greedy, plain at T = 1 and T != 1, min-p, top-k, top-p
        (0.0, 0, 1.0, 0.0), (1.0, 0, 1.0, 0.0), (0.7, 0, 1.0, 0.0), (1.0, 0, 1.0, 0.1), (0.9, 0, 1.0, 0.05),
        (1.2, 5, 1.0, 0.0), (0.8, 20, 0.7, 0.0),
    ]
    temps, ks, ps, mps = (list(col) for col in zip(*settings))
    uniforms = [(i + 0.5) / 7 for i in range(7)]
    with DevicelessFactories() as mode:
        raw = logits.clone()
        processed = logits.clone()
        penalise(processed, [1, 4], [torch.tensor([3, 5], device=logits.device)] * 2,
                 [torch.tensor([7, 7, 9], device=logits.device)] * 2, [1.3, 1.0], [0.5, 0.0], [0.2, 0.4])
        chosen = sample_tokens(processed, temps, ks, ps, uniforms, mps, raw=raw)
        sample_tokens(logits.clone(), temps, ks, ps, uniforms, mps)
    assert len(chosen.tokens) == 7
    assert mode.calls == [], f"tensors made without a device: {mode.calls}"
