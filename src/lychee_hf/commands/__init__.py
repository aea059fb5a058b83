"""The `lychee-hf` commands, one module each: its parser (`add_parser`) and its body (`run`). `lychee_hf.cli` builds
the parser from them and dispatches; shared options live in `arguments`, model loading in `loading`."""
