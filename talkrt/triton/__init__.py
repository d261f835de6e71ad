"""A Triton Inference Server model repository from exported graphs: `talkrt triton`."""
