"""The feedback loop: people's ratings of generations, exported for the ecosystem and turned into a
reward model that reranks samples, fine-tunes generators and selects checkpoints."""
