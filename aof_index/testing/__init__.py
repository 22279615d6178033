"""Contract test suites shipped with aof-index, for its own backends and third-party ones.

Subclass a contract in a test module and provide its fixtures (``make_store``, ``store``,
``stored_texts``: see :mod:`aof_index.testing.chat_store`); pytest collects the inherited
``test_*`` methods::

    import pytest
    from aof_index.testing import ChatStoreContract, store_factory

    class TestMyChatStore(ChatStoreContract):
        @pytest.fixture
        def make_store(self, tmp_path):
            yield from store_factory(lambda **options: MyChatStore(path=..., **options))

        @pytest.fixture
        def store(self, make_store):
            return make_store()

        @pytest.fixture
        def stored_texts(self):
            return lambda store, key: ...  # the texts at rest, read around the store

Running the suites needs pytest, a development dependency of aof-index; importing them
does not (they import nothing from pytest).
"""

from aof_index.testing.chat_store import (
    ChatStore,
    ChatStoreContract,
    MakeStore,
    SharedChatStoreContract,
    StoredTexts,
    store_factory,
)

__all__ = [
    "ChatStore",
    "ChatStoreContract",
    "MakeStore",
    "SharedChatStoreContract",
    "StoredTexts",
    "store_factory",
]
