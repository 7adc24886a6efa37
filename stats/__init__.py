"""Running statistics kept in Redis: state updates (Lua) and reads."""
