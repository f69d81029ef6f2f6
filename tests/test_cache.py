"""qernel.cache: where jobs remember work, and the JAX compilation cache every `qernel` job uses."""

from qernel.cache import cache_dir, use_compilation_cache


def test_cache_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("QERNEL_CACHE_DIR", str(tmp_path / "q"))
    assert cache_dir() == tmp_path / "q"
    monkeypatch.delenv("QERNEL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "qernel"


def test_compilation_cache_goes_to_cache_dir_unless_the_caller_chose(monkeypatch, tmp_path):
    for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "QERNEL_JAX_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QERNEL_CACHE_DIR", str(tmp_path))
    use_compilation_cache()
    import os

    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "jax")
    assert os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/elsewhere")
    use_compilation_cache()
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == "/elsewhere"
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("QERNEL_JAX_CACHE", "0")
    use_compilation_cache()
    assert "JAX_COMPILATION_CACHE_DIR" not in os.environ
