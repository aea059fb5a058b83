"""Hub model-card templates (package data of lychee_hf, rendered by lychee_hf.model_card)."""
