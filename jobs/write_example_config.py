"""Regenerate jobs/shopllm.example.toml from the config dataclasses: python -m jobs.write_example_config"""

from pathlib import Path

from shopllm.config import Config, to_toml

if __name__ == "__main__":
    path = Path(__file__).with_name("shopllm.example.toml")
    path.write_text(to_toml(Config()))
    print(f"wrote {path}")
