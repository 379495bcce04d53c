-- The day partitions the schema starts with: today and a week ahead (maintain_partitions()).
SELECT maintain_partitions();
