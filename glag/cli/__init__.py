"""What the console scripts share and the stages do not need: error reporting, option types, progress lines,
finding the bank a tool should use, reading a saved config."""
