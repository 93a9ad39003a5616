drop schema votes cascade;
