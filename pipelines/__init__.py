"""Apache Beam pipelines, one composite PTransform per stage; the logic lives in `shopllm`."""
