//! The store contract suite against the store `TEST_STORE` names
//! (`memory`, `embedded`, `dynamodb`; the README's test command runs each):
//! one test per check, named after it.

chat_core::store_contract!(chat_tests::contract_fixture());
chat_core::connections_contract!(chat_tests::contract_connections());
chat_core::nodes_contract!(chat_tests::contract_nodes());
