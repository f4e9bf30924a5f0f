"""The export-friendly Llama decoder and safetensors checkpoint I/O."""
