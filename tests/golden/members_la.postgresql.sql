SELECT members."geography.country_code", members."geography.country_name", members."geography.region_code", members."geography.region_name", members."geography.la_code", members."geography.la_name", count(*) OVER () AS __total_cells 
FROM (SELECT DISTINCT dim_geography.country_code AS "geography.country_code", dim_geography.country_name AS "geography.country_name", dim_geography.region_code AS "geography.region_code", dim_geography.region_name AS "geography.region_name", dim_geography.la_code AS "geography.la_code", dim_geography.la_name AS "geography.la_name" 
FROM dim_geography 
WHERE dim_geography.country_code = 'E92000001') AS members ORDER BY members."geography.country_code", members."geography.region_code", members."geography.la_code" 
 LIMIT 5 OFFSET 5
