# Standalone HBase 2.6.1 + its Thrift1 server, from the same pom as deploy/local.
FROM maven:3.9-eclipse-temurin-17 AS jars
COPY deploy/local/hbase/pom.xml /build/pom.xml
RUN mvn -q -B -f /build/pom.xml dependency:copy-dependencies \
      -DoutputDirectory=/opt/hbase/lib -DincludeScope=runtime

FROM eclipse-temurin:17-jre
COPY --from=jars /opt/hbase/lib /opt/hbase/lib
COPY deploy/docker/hbase-site.xml /opt/hbase/conf/hbase-site.xml
COPY deploy/docker/hbase-start.sh /opt/hbase/start.sh
RUN chmod +x /opt/hbase/start.sh
VOLUME /hbase
EXPOSE 9090
CMD ["/opt/hbase/start.sh"]
