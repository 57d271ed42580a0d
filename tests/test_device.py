"""``device``: chees and SVI run on it, NUTS and Laplace stay on the CPU and say so, a device
this machine lacks is a clear error before anything runs, and results come back on the CPU."""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import zoo
import zoo.inference
from zoo.errors import ZooError
from zoo.fit import default_dtype
from zoo.inference import resolve_device
from zoo.inference.settings import SVISettings
from zoo.inference.svi import guide_on_cpu
from zoo.tracing import guide_draws

from conftest import SMOKE, default_data

NO_CUDA = not torch.cuda.is_available()
SETTINGS = {"chees": SMOKE["chees"], "svi": SMOKE["svi"], "nuts": SMOKE["nuts"],
            "laplace": SMOKE["laplace"]}




@pytest.mark.parametrize("method", ["chees", "svi"])
def test_cpu_is_the_default_and_gives_the_same_draws(method):
    data = default_data("eight_schools_noncentered")
    a, b = (zoo.fit("eight_schools_noncentered", data, method=method, seed=2,
                    **SETTINGS[method], **device) for device in ({}, {"device": "cpu"}))
    assert a.settings["device"] == b.settings["device"] == "cpu"
    assert "device_note" not in b.info
    for site in a.posterior:
        np.testing.assert_array_equal(a.posterior[site], b.posterior[site])


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("method", ["chees", "svi", "nuts"])
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_on_a_machine_without_it_fails_before_anything_runs(method, device, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the data were prepared before the device was checked")

    monkeypatch.setattr(zoo.inference, "resolve", must_not_run)
    with pytest.raises(ZooError, match=rf"device '{device}' requested, but this machine has no "
                                       r"CUDA: .*torch.version.cuda.*; use device='cpu'") as e:
        zoo.fit("eight_schools_noncentered", {}, method=method, device=device)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name,hint", [("gpu", "did you mean 'cuda'?"), ("GPU", "did you mean 'cuda'?"),
                                       ("CPU", "did you mean 'cpu'?"), ("cuda:x", ""),
                                       ("cuda:-1", ""), ("tpu", "")])
def test_a_bad_device_name_lists_what_is_allowed(name, hint):
    with pytest.raises(ZooError, match="allowed: cpu, cuda, cuda:N") as e:
        resolve_device(name)
    assert f"unknown device {name!r}" in str(e.value)
    assert hint in str(e.value)


def test_a_cuda_index_beyond_the_device_count_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(ZooError, match=r"device 'cuda:2' requested, but this machine has 2 CUDA"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("method", ["nuts", "laplace"])
def test_cpu_only_methods_run_on_the_cpu_and_say_so(method, monkeypatch):
    # A machine that claims CUDA: the device passes validation, yet NUTS and Laplace never touch
    # it (this torch build has no CUDA, so any CUDA tensor would fail) and the Fit records that.
    data = default_data("eight_schools_noncentered")
    cpu = zoo.fit("eight_schools_noncentered", data, method=method, seed=1, **SETTINGS[method])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    fit = zoo.fit("eight_schools_noncentered", data, method=method, seed=1, device="cuda",
                  **SETTINGS[method])
    assert fit.settings["device"] == "cuda"
    assert fit.info["device_note"].startswith(f"{method} ran on the CPU, not cuda: ")
    assert "\n" not in fit.info["device_note"]
    assert "device_note" not in cpu.info
    np.testing.assert_array_equal(fit.posterior["tau"], cpu.posterior["tau"])


def bounded(y=None):
    """A support with tensor bounds: its constraint, in the guide and the param store, holds
    tensors on the device the guide was built on."""
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    sigma = pyro.sample("sigma", dist.Uniform(0.1, 10.0))
    with pyro.plate("data", 20):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


@pytest.mark.parametrize("guide", ["normal", "mvn", "delta"])
def test_the_guide_rebuilt_on_the_cpu_is_the_fitted_guide(guide):
    # After a GPU run SVI rebuilds its guide on the CPU with the fitted parameters; here (on
    # the CPU) the rebuilt guide must give the fitted guide's draws for the same seed.
    y = torch.linspace(-1.0, 3.0, 20)
    fit = zoo.fit(bounded, {"y": y}, method="svi", seed=0, guide=guide, **SMOKE["svi"])

    def draws(g) -> dict:
        pyro.set_rng_seed(7)
        return guide_draws(g, fit.data, 50, fit.latent_names, 1)[0]

    with fit.guide_scope(), default_dtype(fit.dtype):
        want = draws(fit.guide)
        rebuilt = guide_on_cpu(fit.spec, SVISettings(guide=guide), fit.data)
        got = draws(rebuilt)
    for site in want:
        torch.testing.assert_close(got[site], want[site], rtol=0, atol=0)


@pytest.mark.skipif(NO_CUDA, reason="no CUDA device on this machine")
@pytest.mark.parametrize("method", ["chees", "svi"])
def test_a_cuda_fit_comes_back_on_the_cpu_and_agrees_with_a_cpu_fit(method):
    if method == "chees":
        name, settings = "linear_regression", SMOKE["chees"]
    else:  # converged enough that optimiser noise is small (see test_svi_jit's conjugate test)
        name = "normal_normal"
        settings = {"num_steps": 3000, "lr": 0.02, "num_samples": 4000, "num_particles": 4}
    data = default_data(name)
    cpu, gpu = (zoo.fit(name, data, method=method, seed=0, device=device, **settings)
                for device in ("cpu", "cuda"))
    assert gpu.settings["device"] == "cuda" and "device_note" not in gpu.info
    # Everything the Fit holds is on the CPU, and post-processing runs there.
    assert all(isinstance(v, np.ndarray) for v in gpu.posterior.values())
    assert all(isinstance(v, np.ndarray) for v in gpu.sample_stats.values())
    assert all(v.device.type == "cpu" for v in gpu.data.values() if torch.is_tensor(v))
    assert all(np.isfinite(v).all() for v in gpu.log_likelihood().values())
    if method == "chees":
        assert isinstance(gpu.info["inverse_metric"], np.ndarray)
        assert gpu.info["log_density"] == "torch.jit.trace"
    else:
        assert all(v.device.type == "cpu" for v in gpu.info["param_store"]["params"].values())
        # the JIT check compares compiled and plain ELBOs at the same GPU random numbers
        assert gpu.info["elbo_path"] == "jit+vectorised", gpu.info.get("elbo_fallback")
        assert np.isfinite(gpu.log_evidence("importance").value)  # the guide runs on the CPU
    a, b = cpu.summary(), gpu.summary()
    mcse = np.sqrt(a["mcse_mean"] ** 2 + b["mcse_mean"] ** 2)
    # SVI: 2% of a posterior sd per fit for optimiser noise, as in test_svi_jit
    slack = 0.0 if method == "chees" else 0.04 * a["sd"]
    assert ((a["mean"] - b["mean"]).abs() < 4 * mcse + slack).all(), (a, b)
