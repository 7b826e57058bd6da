SELECT CAST(coalesce(sum(fact_housing_benefit.n), 0) AS BIGINT) AS __n, CAST(coalesce(sum(fact_housing_benefit.rk), 0) % 4096 AS INTEGER) AS __rk, CAST(coalesce(sum(fact_housing_benefit.rk2), 0) % 4096 AS INTEGER) AS __rk2, CAST(coalesce(sum(fact_housing_benefit.weekly_award_sum), 0) AS BIGINT) AS __weekly_award_sum, CAST(coalesce(max(fact_housing_benefit.weekly_award_max), 0) AS BIGINT) AS __weekly_award_max 
FROM fact_housing_benefit 
WHERE fact_housing_benefit.month_id = 202611
