-- The copy of each gateway node's audit log: its lines as the node wrote them, by number.
-- The node's file is the first record; `handoff audit verify` checks each node's chain here.
CREATE TABLE audit (
    node TEXT NOT NULL,
    seq  BIGINT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (node, seq)
);
