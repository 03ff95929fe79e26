DROP TABLE branches;
DROP TABLE transactions;
DROP TABLE resources;
