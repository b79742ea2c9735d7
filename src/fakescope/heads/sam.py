"""Sharpness-Aware Minimization (Foret et al., ICLR 2021) around any torch optimiser.

SAM minimises the worst loss in a small L2 ball around the weights, preferring flat
minima, which transfer better to unseen generators and post-processing. Each step
takes two gradients: at w (to find the ascent direction) and at w + e, e = rho g/||g||;
the base optimiser then updates w with the second one.

    loss(model(x)).backward(); opt.first_step(zero_grad=True)
    loss(model(x)).backward(); opt.second_step(zero_grad=True)
or  opt.step(closure)   # closure: zero_grad is done for you; it runs forward + backward, returns the loss
"""
from __future__ import annotations

from typing import Callable

import torch


class SAM(torch.optim.Optimizer):
    def __init__(self, params, base_optimizer: type[torch.optim.Optimizer] = torch.optim.AdamW,
                 rho: float = 0.05, **kwargs):
        if rho < 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        super().__init__(params, dict(rho=rho, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups  # one set of groups: lr schedulers see both
        self.defaults.update(self.base_optimizer.defaults)

    def _grad_norm(self) -> torch.Tensor:
        grads = [p.grad.detach().norm(2) for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return torch.zeros(())
        return torch.stack(grads).norm(2)  # global norm over all parameters

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Save w and move to the ascent point w + rho * g / ||g||."""
        norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["old_p"] = p.detach().clone()
                p.add_(p.grad * scale.to(p))
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore w, then let the base optimiser step with the gradient taken at the ascent point."""
        for group in self.param_groups:
            for p in group["params"]:
                old = self.state[p].pop("old_p", None)
                if old is not None:
                    p.copy_(old)
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        """Both SAM steps; `closure` computes the loss and calls backward. Returns the loss at w."""
        if closure is None:
            raise ValueError("SAM.step needs a closure (forward + backward); or call first_step/second_step")
        closure = torch.enable_grad()(closure)
        self.zero_grad()
        loss = closure()
        self.first_step(zero_grad=True)
        closure()
        self.second_step()
        return loss
