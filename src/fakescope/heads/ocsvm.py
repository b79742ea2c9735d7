"""One-class SVM fitted on real images only: an image is as fake as it lies outside the support
of the real embeddings. No scikit-learn: the nu-OCSVM primal over random Fourier features.

Schoelkopf et al.'s nu-one-class SVM with an RBF kernel k(x, x') = exp(-gamma |x - x'|^2):

    min_{w, rho}  1/2 |w|^2 - rho + 1/(nu n) * sum_i max(0, rho - <w, phi(x_i)>)      (reals x_i)
    decision f(x) = <w, phi(x)> - rho        (>= 0 inside the real support)

phi are D random Fourier features (Rahimi & Recht 2007), phi(x) = sqrt(2/D) cos(x W + b) with
W ~ N(0, 2 gamma I), b ~ U(0, 2 pi), so <phi(x), phi(x')> approximates the kernel. The problem is
convex in (w, rho); the hinge is smoothed (softplus with sharpness beta, raised in steps) and
solved by L-BFGS. gamma "scale" is 1 / (dim * var(X)), scikit-learn's default. Rows are
L2-normalised first (embeddings live on the sphere). P(fake) = sigmoid(a * (-f) + b): Platt
scaling on the training data when it has fakes (they never touch w or rho), else a sigmoid through
0.5 at the reals' decision boundary.
"""
from __future__ import annotations

import numpy as np
import torch

from .registry import register
from .prototype import _sigmoid, _unit, fit_score_map


def fit_ocsvm_primal(Phi: torch.Tensor, nu: float, betas=(10.0, 100.0, 1000.0), max_iter: int = 200) -> tuple[torch.Tensor, float]:
    """(w, rho) minimising the smoothed nu-OCSVM primal over feature rows Phi (n, D)."""
    n, D = Phi.shape
    w = Phi.mean(0).clone().requires_grad_(True)
    rho = torch.quantile((Phi @ w).detach(), nu).clone().requires_grad_(True)
    for beta in betas:
        opt = torch.optim.LBFGS([w, rho], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            slack = torch.nn.functional.softplus(beta * (rho - Phi @ w)) / beta
            loss = 0.5 * (w * w).sum() - rho + slack.sum() / (nu * n)
            loss.backward()
            return loss

        opt.step(closure)
    return w.detach(), float(rho.detach())


@register
class OneClassSVMHead:
    method = "ocsvm"

    def __init__(self, nu: float = 0.1, gamma: float | str = "scale", n_features: int = 1024,
                 normalize: bool = True, seed: int = 0):
        if not 0 < float(nu) <= 1:
            raise ValueError("ocsvm: nu must be in (0, 1]")
        self.nu, self.gamma, self.n_features, self.normalize, self.seed = float(nu), gamma, int(n_features), bool(normalize), seed
        self.W = self.offsets = self.w = None
        self.rho, self.a, self.b, self.gamma_value = 0.0, 1.0, 0.0, None

    def _prep(self, X: np.ndarray) -> np.ndarray:
        return _unit(X) if self.normalize else np.asarray(X, np.float32)

    def features(self, X: np.ndarray) -> torch.Tensor:
        Z = torch.from_numpy(self._prep(X)).double()
        return np.sqrt(2.0 / self.n_features) * torch.cos(Z @ torch.from_numpy(self.W).double()
                                                          + torch.from_numpy(self.offsets).double())

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """<w, phi(x)> - rho: positive inside the real support (the sign convention of scikit-learn)."""
        return (self.features(X) @ torch.from_numpy(self.w).double()).numpy() - self.rho

    def fit(self, X: np.ndarray, y: np.ndarray | None = None, groups: np.ndarray | None = None) -> dict:
        X = np.asarray(X, np.float32)
        y = np.zeros(len(X), int) if y is None else np.asarray(y)
        R = self._prep(X[y == 0])
        if len(R) < 2:
            raise ValueError("ocsvm: needs at least two real images")
        d = R.shape[1]
        g = 1.0 / (d * float(R.var())) if self.gamma == "scale" else float(self.gamma)
        self.gamma_value = g
        rng = np.random.default_rng(self.seed)
        self.W = rng.normal(0.0, np.sqrt(2 * g), (d, self.n_features)).astype(np.float32)
        self.offsets = rng.uniform(0, 2 * np.pi, self.n_features).astype(np.float32)
        w, self.rho = fit_ocsvm_primal(self.features(X[y == 0]), self.nu)
        self.w = w.numpy().astype(np.float32)
        s = -self.decision_function(X)
        self.a, self.b = fit_score_map(s, y if len(set(y.tolist())) == 2 else None, real_quantile=1 - self.nu)
        f_real = -s[y == 0]
        return {"nu": self.nu, "gamma": g, "n_real": int(len(R)), "outlier_fraction_real": float((f_real < 0).mean())}

    def predict(self, X: np.ndarray) -> np.ndarray:
        return _sigmoid(self.a * -self.decision_function(X) + self.b)

    def config(self) -> dict:
        return {"nu": self.nu, "gamma": self.gamma, "gamma_value": self.gamma_value, "n_features": self.n_features,
                "normalize": self.normalize, "rho": self.rho, "a": self.a, "b": self.b,
                "dim": int(self.W.shape[0]) if self.W is not None else 0}

    def state(self) -> dict[str, np.ndarray]:
        return {"W": self.W, "offsets": self.offsets, "w": self.w}

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "OneClassSVMHead":
        head = cls(nu=config["nu"], gamma=config["gamma"], n_features=config["n_features"], normalize=config["normalize"])
        head.W, head.offsets, head.w = state["W"], state["offsets"], state["w"]
        head.rho, head.a, head.b, head.gamma_value = float(config["rho"]), float(config["a"]), float(config["b"]), config.get("gamma_value")
        return head


def poly_kernel(A: np.ndarray, B: np.ndarray, gamma: float, degree: int, coef0: float) -> np.ndarray:
    """(gamma <a, b> + coef0) ** degree for every pair of rows: scikit-learn's "poly" kernel."""
    return (gamma * (np.asarray(A, np.float64) @ np.asarray(B, np.float64).T) + coef0) ** degree


@register
class PolyOneClassSVMHead:
    """CoDE's one-class SVM (`linear_training.py`): scikit-learn's OneClassSVM(nu=0.1, kernel="poly",
    gamma="auto") on the real images only; degree 3 and coef0 0 are scikit-learn's defaults, gamma
    "auto" is 1 / dim. scikit-learn solves the dual at fit time only (it must be installed to fit);
    the support vectors, their dual coefficients and the intercept are kept as arrays and scored in
    numpy, so a saved model needs neither scikit-learn nor pickle:

        f(x) = sum_i alpha_i (gamma <s_i, x> + coef0) ** degree + intercept     (>= 0 inside the real support)

    CoDE calls f(x) < 0 fake; here P(fake) = sigmoid(a * -f(x) + b), mapped as the RBF head does."""
    method = "ocsvm-poly"

    def __init__(self, nu: float = 0.1, gamma: float | str = "auto", degree: int = 3, coef0: float = 0.0,
                 seed: int = 0):
        if not 0 < float(nu) <= 1:
            raise ValueError("ocsvm-poly: nu must be in (0, 1]")
        self.nu, self.gamma, self.degree, self.coef0, self.seed = float(nu), gamma, int(degree), float(coef0), seed
        self.support = self.dual = None
        self.intercept, self.gamma_value, self.a, self.b = 0.0, None, 1.0, 0.0

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        K = poly_kernel(X, self.support, self.gamma_value, self.degree, self.coef0)
        return K @ self.dual.astype(np.float64) + self.intercept

    def fit(self, X: np.ndarray, y: np.ndarray | None = None, groups: np.ndarray | None = None) -> dict:
        try:
            from sklearn.svm import OneClassSVM
        except ImportError as e:
            raise ImportError("head ocsvm-poly fits with scikit-learn: pip install scikit-learn "
                              "(a fitted model scores without it)") from e
        X = np.asarray(X, np.float32)
        y = np.zeros(len(X), int) if y is None else np.asarray(y)
        R = X[y == 0].astype(np.float64)
        if len(R) < 2:
            raise ValueError("ocsvm-poly: needs at least two real images")
        g = {"auto": 1.0 / R.shape[1], "scale": 1.0 / (R.shape[1] * float(R.var()))}.get(self.gamma)
        self.gamma_value = float(self.gamma) if g is None else g
        svm = OneClassSVM(nu=self.nu, kernel="poly", gamma=self.gamma_value, degree=self.degree, coef0=self.coef0)
        svm.fit(R)
        self.support = np.asarray(svm.support_vectors_, np.float32)
        self.dual = np.asarray(svm.dual_coef_, np.float64).reshape(-1)
        self.intercept = float(np.asarray(svm.intercept_).reshape(-1)[0])
        s = -self.decision_function(X)
        self.a, self.b = fit_score_map(s, y if len(set(y.tolist())) == 2 else None, real_quantile=1 - self.nu)
        return {"nu": self.nu, "gamma": self.gamma_value, "n_real": int(len(R)), "n_support": int(len(self.support)),
                "outlier_fraction_real": float((-s[y == 0] < 0).mean())}

    def predict(self, X: np.ndarray) -> np.ndarray:
        return _sigmoid(self.a * -self.decision_function(X) + self.b)

    def config(self) -> dict:
        return {"nu": self.nu, "gamma": self.gamma, "gamma_value": self.gamma_value, "degree": self.degree,
                "coef0": self.coef0, "intercept": self.intercept, "a": self.a, "b": self.b,
                "dim": int(self.support.shape[1]) if self.support is not None else 0}

    def state(self) -> dict[str, np.ndarray]:
        return {"support": self.support, "dual": self.dual}

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "PolyOneClassSVMHead":
        head = cls(nu=config["nu"], gamma=config["gamma"], degree=config["degree"], coef0=config["coef0"])
        head.support, head.dual = np.asarray(state["support"], np.float32), np.asarray(state["dual"], np.float64)
        head.intercept, head.gamma_value = float(config["intercept"]), float(config["gamma_value"])
        head.a, head.b = float(config["a"]), float(config["b"])
        return head
