"""Contract test suites shipped with aof-index, for its own backends and third-party ones.

Subclass a contract in a test module and provide its fixture; pytest collects the
inherited ``test_*`` methods::

    import pytest
    from aof_index.testing import ChatStoreContract

    class TestMyChatStore(ChatStoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            return MyChatStore(...)

Running the suites needs pytest, a development dependency of aof-index; importing them
does not (they import nothing from pytest).
"""

from aof_index.testing.chat_store import ChatStore, ChatStoreContract, SharedChatStoreContract

__all__ = ["ChatStore", "ChatStoreContract", "SharedChatStoreContract"]
