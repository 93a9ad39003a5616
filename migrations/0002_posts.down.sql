drop schema posts cascade;
