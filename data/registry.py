"""The one way GLAG registers pluggable parts by name (datasets, losses, backbones, heads, tail rules)."""


def registrar(table: dict, kind: str):
    """A `register(name)` decorator factory that adds objects to `table`.

    Registering a name twice raises KeyError, so two plugins can never silently
    replace each other.
    """
    def register(name: str):
        def add(obj):
            if name in table:
                raise KeyError(f"{kind} {name!r} is already registered (by {getattr(table[name], '__name__', table[name])})")
            table[name] = obj
            return obj
        return add
    return register
