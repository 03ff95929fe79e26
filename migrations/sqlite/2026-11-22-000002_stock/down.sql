DROP TABLE tcc_barriers;
DROP TABLE stock_reservations;
DROP TABLE stock;
